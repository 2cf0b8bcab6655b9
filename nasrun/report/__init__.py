"""What turns run folders into tables and figures: ``nasrun report``, plots and TensorBoard."""
