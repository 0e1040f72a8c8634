from whereabouts_py.cli import main

raise SystemExit(main())
