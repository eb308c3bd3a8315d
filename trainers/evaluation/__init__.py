"""Evaluation: matches, exact exploitability, held-out tasks, ratings, out-of-domain games."""
