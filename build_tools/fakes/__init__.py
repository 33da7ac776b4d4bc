"""Local servers that speak the providers' protocols (OpenAI, Gemini, the Hub), failures
included, for the tests and `facext bench llm`."""
