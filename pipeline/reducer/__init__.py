"""The state reducer: folds TaskEvents into one TaskState per try, persisted in a changelog."""
