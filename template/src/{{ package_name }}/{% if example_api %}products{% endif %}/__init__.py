"""The worked example domain: products, from HTTP route to storage."""
