"""Stage 3: official verdicts (the local sandboxed backend and the official harness behind one protocol)."""
