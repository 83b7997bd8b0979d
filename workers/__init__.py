"""Workers: consume send requests, validate, batch per sender and submit them to ICS."""
