"""Batch jobs: submitting, processing in chunks on workers, their files, and their results."""
