"""The shared core every plane imports: settings, errors, schemas, lake layout, events, the registry and the
online store. It imports nothing else of the project."""
