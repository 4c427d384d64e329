"""Benchmark runners and the leaderboard."""
