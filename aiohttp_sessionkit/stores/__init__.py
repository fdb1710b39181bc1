"""Store drivers. Those with optional dependencies are imported only when used."""
