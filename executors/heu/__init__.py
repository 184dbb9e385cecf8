"""HEU: the homomorphic-encryption device (Paillier), for sums where one party holds the values and
the key and another holds the group labels.

Modules:
  fixed_base      windowed fixed-base exponentiation tables (gmpy2), window chosen by batch size
  teichmuller     the key owner's tables mod p^2: half-width residues and Fermat quotients
  kernels         the batch arithmetic (DJN encryption, key-owner CRT encryption, CRT decryption,
                  randomisers), free of sqlsecure imports so worker processes load it alone
  paillier        keys on top of phe, encryptors and randomisers with input checks, the scheme
                  and its security argument, ciphertext bytes
  worker_process  the HE worker process (python -I, stdin / stdout frames)
  workers         `HEWorkers`: the process's shared HE worker processes, one per core
  packing         slot layout (signed fixed-width values, offset encoding, headroom, mask bits)
                  and the packing plan (rows per ciphertext, merged returns) with its cost model
  messages        the protocol's messages as Arrow tables (ciphertexts as fixed_size_binary columns)
  group_sum       the `he_group_sum` / `he_sum` protocol, its shares, reveal, and plaintext reference
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
from sqlsecure.executors.heu.packing import PackingPlan, SlotLayout, choose_packing, from_fixed_point, to_fixed_point
from sqlsecure.executors.heu.paillier import (
    Encryptor,
    OwnerEncryptor,
    PrivateKey,
    PublicKey,
    Randomizer,
    generate_keypair,
    keypair_from_phe,
    rerandomize,
)
from sqlsecure.executors.heu.workers import HEWorkers

__all__ = [
    "Encryptor", "GroupSumShare", "GroupSums", "HEParams", "HEWorkers", "OwnerEncryptor", "PackingPlan",
    "PrivateKey", "PublicKey", "Randomizer", "SlotLayout", "choose_packing", "from_fixed_point",
    "generate_keypair", "group_codes", "group_sum_reference", "he_group_sum_labels", "he_group_sum_values",
    "he_sum_labels", "he_sum_values", "keypair_from_phe", "rerandomize", "reveal_group_sums", "to_fixed_point",
]
