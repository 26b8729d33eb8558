"""Operator commands: triggers_inspect, triggers_fire, triggers_replay,
triggers_skip, triggers_graph, triggers_validate."""
