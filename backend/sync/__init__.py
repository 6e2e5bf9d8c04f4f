"""The Convex sync protocol over WebSocket: sessions, query sets, transitions."""
