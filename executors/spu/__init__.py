"""SPU: semi-honest additive secret sharing over Z_2^64 for 2 or 3 compute parties, with
correlated randomness from a trusted dealer (SecretFlow SEMI2K + TTP; TF-Encrypted's crypto
producer; CrypTen's structure: share classes, protocol functions, a randomness provider and a
communicator that counts rounds and bytes).

Modules: `shares` (ArithShare, BoolShare, encodings), `prg` (AES-CTR PRG), `dealer` (Dealer
role and the parties' DealerClient), `session` (SpuSession: endpoint, parties, batched openings),
`arith` (sharing, reveal, Beaver products, truncation), `boolean` (AND, adder, A2B, B2A),
`compare` (comparisons, mux, min/max, abs/sign, division), `relational` (shuffle, sort,
group-by, ranks, limit, union), `local` (run a program with parties as threads),
`secret_relation` (secret relations: shares + a validity bit per row, and their operators) and
`program` (the secret-program interpreter the planner's SecretQuery step runs).
"""
