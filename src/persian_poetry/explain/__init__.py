"""The lesson of how a GPT works, on the seed's worked examples and on the real model, and its figures."""
