"""One module per client dialect: lower the request to canonical chat, render events back."""
