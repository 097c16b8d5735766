"""The basis policy (which epochs are due, which basis keys improved) and the argument
checks every callback shares. Pure Python."""
