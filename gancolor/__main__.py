"""`python -m gancolor [overrides]`: compose the config with Hydra, build, train."""

from gancolor.cli import train_main

if __name__ == "__main__":
    train_main()
