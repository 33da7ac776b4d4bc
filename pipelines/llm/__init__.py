"""The LLM layer, provider-neutral: requests, backends, cache, limits, client, batch jobs, prices."""
