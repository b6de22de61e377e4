"""What happens on a write or a clock tick: rules -> flags (-> plans -> reminders, later)."""
