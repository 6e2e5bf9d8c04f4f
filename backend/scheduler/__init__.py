"""Durable scheduled functions and crons."""
