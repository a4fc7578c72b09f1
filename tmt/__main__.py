"""`python -m tmt` (used by torchrun: `torchrun --nproc-per-node 2 -m tmt train ...`)."""

from __future__ import annotations

from tmt.cli import main

if __name__ == "__main__":
    main()
