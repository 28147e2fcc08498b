"""Entry point of a decode worker process: `python -m reproduce.data._worker`."""

from reproduce.data.decode import _worker_main

if __name__ == "__main__":
    _worker_main()
