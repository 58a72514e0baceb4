"""Message-passing operators, one per file (as torch-geometric keeps them)."""
