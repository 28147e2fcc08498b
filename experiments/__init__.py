"""Experiments around the product (`reproduce`): prototypes measured before a
change is made, through the product's public APIs only."""
