"""A job module that stops as ``workbench train`` does when its Stop reaches it directly (exit STOPPED_EXIT)."""

import sys

from interp.store.jobs import STOPPED_EXIT

if __name__ == "__main__":
    print("checkpointed; stopping", flush=True)
    sys.exit(STOPPED_EXIT)
