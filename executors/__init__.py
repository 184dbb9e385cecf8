"""Executors: one package per device, each with its protocol library and the plan operator that runs it.

  psi      PSI joins (ECDH, KKRT16, unbalanced): align two parties' rows, revealing the intersection
  spu      secret sharing over Z_2^64 with a dealer; the SPU stage interpreter and oblivious join
  heu      Paillier homomorphic encryption; the HE group-by operator
  tee      the attested enclave (simulation backend) and its stage
  runtime  channels, the embedded and network runtimes, the party executor (PYU), worker processes
"""
