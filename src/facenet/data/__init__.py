"""Images, identity folders, batch samplers and benchmark protocol files."""
