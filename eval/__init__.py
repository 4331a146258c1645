"""The benchmark: embedding, probes, metrics, tasks, results files and the leaderboard."""
