from sltrain.cli import main

raise SystemExit(main())
