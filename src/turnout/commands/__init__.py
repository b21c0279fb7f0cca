"""What the turnout deploy and turnout status commands do, apart from parsing their flags."""
