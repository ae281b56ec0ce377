"""Raw records -> validated tables -> point-in-time customer features and labels."""
