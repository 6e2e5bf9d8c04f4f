"""Helpers shared by the booking platform's domains: error shapes, business settings, roles."""
