"""Type stubs of the Rust extension ``mclstexp._native`` (checked by ``python -m mypy.stubtest``).

Each section belongs to one core area; keep them in the order of ``rust/mclstexp-py/src/lib.rs``.
"""

__version__: str

# Every name the module exports (PyO3 maintains the runtime list; keep this one in sync).
__all__ = [
    "__version__",
    # pool
    "default_num_threads",
    "_diagnostic_sleep",
]

# --- pool -------------------------------------------------------------------------------------
def default_num_threads() -> int: ...
def _diagnostic_sleep(n_tasks: int, millis: int, *, n_threads: int | None = None) -> int: ...
