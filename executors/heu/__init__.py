"""HEU: the homomorphic-encryption device (Paillier), for sums where one party holds the values and
the key and another holds the group labels.

Modules:
  fixed_base  byte-windowed fixed-base exponentiation tables (gmpy2)
  paillier    keys on top of phe, DJN-randomness encryption (public-key and key-owner CRT paths),
              Paillier re-randomisation, ciphertext bytes
  workers     a party's forkserver pool for large encryption / decryption batches
  packing     slot layout: signed fixed-width values, offset encoding, headroom, mask bits
  messages    the protocol's messages as Arrow tables (ciphertexts as fixed_size_binary columns)
  group_sum   the `he_group_sum` / `he_sum` protocol, its shares, reveal, and plaintext reference
"""

from sqlsecure.executors.heu.group_sum import (
    GroupSums,
    GroupSumShare,
    HEParams,
    group_codes,
    group_sum_reference,
    he_group_sum_labels,
    he_group_sum_values,
    he_sum_labels,
    he_sum_values,
    reveal_group_sums,
)
from sqlsecure.executors.heu.packing import SlotLayout, from_fixed_point, to_fixed_point
from sqlsecure.executors.heu.paillier import (
    Encryptor,
    OwnerEncryptor,
    PrivateKey,
    PublicKey,
    generate_keypair,
    keypair_from_phe,
    rerandomize,
)
from sqlsecure.executors.heu.workers import HEWorkers

__all__ = [
    "Encryptor", "GroupSumShare", "GroupSums", "HEParams", "HEWorkers", "OwnerEncryptor", "PrivateKey",
    "PublicKey", "SlotLayout", "from_fixed_point", "generate_keypair", "group_codes",
    "group_sum_reference", "he_group_sum_labels", "he_group_sum_values", "he_sum_labels", "he_sum_values",
    "keypair_from_phe", "rerandomize", "reveal_group_sums", "to_fixed_point",
]
