"""`lmscale plan`: compile a recipe's train step ahead of time for a Cloud TPU topology and
say whether it fits, what it computes and moves, and how fast it should run."""
