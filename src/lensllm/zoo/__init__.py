"""The offline candidate zoo: tiny GPT-2s pretrained here, and the tasks to rank them on.

A data builder for the demo and the tests, on top of the core and the Hugging Face layer.
"""
