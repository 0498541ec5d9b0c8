"""`python -m leitstand.sink`, as docs/cluster.md documents it: runs `leitstand sink`."""

from .nats.main import main

if __name__ == "__main__":
    main()
