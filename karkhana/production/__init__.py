"""Production monitoring: machine states, counts, OEE, downtime reasons, shift reports."""
