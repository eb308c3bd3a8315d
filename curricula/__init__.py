"""Task generators with difficulty knobs, and difficulty controllers (curricula)."""
