"""`gateway demo`: the whole flow on loopback, every party played, in a throwaway folder."""
