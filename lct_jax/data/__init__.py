"""Scene data: the synthetic scene generator, its tokenizer, and estimators
that read the generator's hidden factors back from pixels."""
