"""HTTP routes of the tokenizer: one module per resource."""
