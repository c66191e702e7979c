"""Alarms: the rule engine (pure, shared with the edge), alarm life cycle, notifications."""
