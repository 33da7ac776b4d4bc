"""Training of the papers' models on facext shards (to come)."""
