"""What a quant costs, measured: llama-perplexity's numbers and KL-divergence, llama-bench's speed, the texts
they are scored on."""
