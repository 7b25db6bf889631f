"""RAMiT image restoration for the Hugging Face ecosystem."""
