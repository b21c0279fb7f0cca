"""What outlives a process: the model repository on disk, and the queue of writes to it."""
