"""PSI: the join protocols that align two parties' rows on a key, revealing only the intersection.

Modules:
  encoding         the typed, canonical encoding of join keys both parties hash alike
  blinding         keys hashed onto Curve25519 and blinded by X25519; the blinding worker pool
  blinding_worker  the blinding worker process (python -I, stdin / stdout frames)
  ecdh             ECDH-PSI (join indices and membership) and the finishing layer all PSIs share
                   (`Intersection`, `join_from`, `membership_of`, `compose_matches`)
  ot               base OTs, their IKNP extension and KKRT's 1-out-of-n OT
  kkrt             KKRT16 OT-based PSI, the same contract as `ecdh`
  unbalanced       unbalanced ECDH-PSI: the large side's blinded set prepared once per epoch
"""
