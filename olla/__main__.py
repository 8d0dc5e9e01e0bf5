"""`python -m olla` runs the CLI."""

from olla.cli import main

if __name__ == "__main__":
    main()
