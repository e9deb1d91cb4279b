"""frugalrl: RL from verifiable rewards for small reasoning models, on a budget."""

__version__ = "0.1.0"
