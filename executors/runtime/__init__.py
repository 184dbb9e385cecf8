"""The runtime: how a physical plan runs across parties, and the only paths between them.

Modules:
  channel           `Channel` / `Endpoint` (bytes, rounds and byte counts), the in-process channel
  embedded          the embedded runtime: every party an isolated executor in one process
  network           network mode: each party, the dealer and the enclave driver a Flight service
  party             `PartyExecutor` (PYU): a party's share of a plan over its own store
  plan_codec        the safe JSON codec for plans sent to parties
  worker_processes  the pool of ``python -I`` worker processes for GIL-bound batches
  worker_main       the worker's side of that pool's frames (standard library only)
"""
