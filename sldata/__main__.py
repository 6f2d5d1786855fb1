from sldata.cli import main

raise SystemExit(main())
