"""Outbound webhooks: endpoint URLs and their safety checks, signing, the delivery schedule, the sender."""
