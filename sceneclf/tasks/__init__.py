"""What is done with a search's result: retrain the best trial (retrain), score a model on a
split (evaluate), classify recordings of any length (predict). Library functions returning data."""
