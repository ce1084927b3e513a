"""The normalized event: its model, the field rules a record must pass, the JSON codec, the rejected
record, JSONPath, and ``eventMapping`` compiled into the function that turns a record into an event."""
